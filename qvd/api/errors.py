"""The API's status codes and their literal messages (QVD 4's Exception.pm).

Every failure travels as an ``APIError``; ``envelope()`` turns it into the
body QVD 4 sends: ``status``, ``message`` (with `` (<object>)`` when the
error names a filter, argument, field or value), ``additional_info`` and,
for bulk operations, ``failures`` by object id.
"""

from __future__ import annotations

from typing import Any, Optional

MESSAGES: dict[int, str] = {
    0: "Successful completion",
    1000: "In progress",
    1100: "Internal server error",
    1200: "Action not accomplished for all elements",
    1300: "Zero items selected, no item has been changed",
    2100: "No connection to database",
    2210: "Unable to copy disk image from staging",
    2211: "Unable to copy whole disk image (lack of space?)",
    2220: "Unable to find images directory in filesystem",
    2230: "Unable to find staging directory in filesystem",
    2240: "Unable to find disk image in staging directory",
    2250: "Unable to upload disk image",
    2251: "Unable to move uploaded disk image",
    2260: "Unable to download disk image",
    2261: "Unable to move downloaded disk image",
    2270: "Unable to read file from disk",
    2280: "Error while accessing to Disk Image Generator",
    2290: "Unable to find Disk Image",
    2291: "Unable to find OSD",
    3100: "No credentials provided for authentication",
    3200: "Wrong credentials - Login again",
    3300: "Session expired - Login again",
    3400: "Problems to update expiration time in session",
    3500: "Access to tenant is restricted",
    3600: "Error in log out",
    3700: "Configuration parameter is not defined",
    4100: "Unavailable action",
    4110: "Invalid or null action name provided",
    4210: "Forbidden action for this administrator",
    4220: "Forbidden filter for this administrator",
    4221: "Forbidden filter value for this administrator",
    4230: "Forbidden argument for this administrator",
    4250: "Forbidden field for this administrator",
    4260: "Forbidden sorted by field for this administrator",
    5110: "Unable to disconnect user in current state",
    5120: "Unable to stop VM in current state",
    5130: "Unable to start VM in current state",
    5140: "Unable to assign host, no host available",
    5200: "Unable to delete current administrator",
    6100: "Syntax errors in input json",
    6210: "Inappropiate filter for this action",
    6220: "No mandatory filter for this action",
    6230: "Inappropiate argument for this action",
    6231: "Inappropiate argument for the nested query action",
    6240: "No mandatory argument for this action",
    6250: "Inappropiate field for this action",
    6310: "Invalid value",
    6320: "Invalid filter value",
    6322: "Unique filter value needed",
    6330: "Invalid argument value",
    6340: "Invalid property value",
    6350: "Invalid tag value",
    6360: "Invalid acl value",
    6370: "Invalid role value",
    6380: "Invalid config token",
    6410: "Lack of value for a not nullable field",
    6420: "No property value provided",
    6430: "No tag provided",
    6440: "No acl provided",
    6450: "No role provided",
    6600: "Invalid order direction",
    6610: "Invalid order by field",
    6620: "External API not configured",
    7100: "Refered related items don't exist",
    7110: "Unable to accomplish, refered related items don't exist",
    7120: "Unable to remove, other items depend on it",
    7200: "This element already exists",
    7210: "This property already exists",
    7211: "This property is already defined for superadmin",
    7212: "Host properties can only be assigned by superadmin",
    7213: "Host properties can only be modified by superadmin",
    7214: "Host properties can only be created for superadmin",
    7215: "Properties cannot be created as global",
    7220: "This acl has already been assigned",
    7230: "This role has already been assigned",
    7300: "Unable to create VM with OSF and User from different tenants",
    7310: "Unable to remove VM - This VM is running",
    7320: "Unable to remove DI - There are VMs running with it",
    7321: "Unable to remove Host - The host is running",
    7330: "Unable to reassign a Tag fixed to another DI",
    7340: "Fixed, Head and Default Tags cannot be deleted",
    7350: "Forbidden role assignment, inherited role inherits from inheritor",
    7370: "Unable to remove a core config item",
    7373: "Unable to switch to monotenant mode - More than one tenant in the system",
    7382: "Cannot create new configuration token",
    7390: "Configuration token value is already set to the default one",
    7500: "OSD is not defined for specified OSF",
}

NO_INFO = "No additional information"


class APIError(Exception):
    """A request the API refuses or cannot carry out, with QVD 4's code."""

    def __init__(self, code: int, obj: Optional[Any] = None, info: Optional[str] = None,
                 failures: Optional[dict[str, "APIError"]] = None):
        if code not in MESSAGES:
            code, info = 1100, f"Unknown code {code}"
        self.code = code
        self.obj = obj
        self.info = info
        self.failures = failures or {}
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = MESSAGES[self.code]
        return f"{text} ({self.obj})" if self.obj is not None else text

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.code, "message": self.message,
                                "additional_info": self.info or NO_INFO}
        if self.failures:
            body["failures"] = {str(k): v.body() for k, v in self.failures.items()}
        return body


def success(**extra: Any) -> dict[str, Any]:
    return {"status": 0, "message": MESSAGES[0], **extra}
