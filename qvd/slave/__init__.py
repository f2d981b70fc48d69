"""The NX slave channel (reference §4.8): QVD's HTTP dialect between the two ends of a
session, over connections that nxagent and nxproxy carry inside the NX link."""
