"""What the scenario suites share beyond the esjoin harness (no tests here): `scenario`."""
