"""What the emulator tests share (no tests here): `endpoint` (an endpoint in this process, boto3 clients,
functions, probes, waits), `esm` (the mapping engine on moto's backends with a scripted function),
`raw_http` (requests boto3 would never send) and `legacy_names` (old top-level module names)."""
