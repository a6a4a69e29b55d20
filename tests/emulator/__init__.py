"""The endpoint over HTTP, its Lambda runtime and its mapping engine."""
