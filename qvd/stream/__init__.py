"""The stream kit on the ground floor: what the L7R, HKD, VMA and client share to move
bytes and wait for events (``Once``, the splice, socket tuning, line splitting, polling).
It imports no daemon."""
