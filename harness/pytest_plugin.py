"""pytest plugin: backends, session bootstrap, waits and history checks (see harness/)."""
