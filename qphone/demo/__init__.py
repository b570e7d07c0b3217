"""`qphone demo`: the in-memory core demo, real calls on this machine, the keyserver process."""
