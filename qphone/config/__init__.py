"""Local configuration of an endpoint: its identity file and the pinned peer identities."""
