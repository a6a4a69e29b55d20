"""The project's tests, a package tree so that each suite's modules import by one name (tests.<suite>.<module>)
whether pytest runs one suite or all of them: tests/unit, tests/emulator, tests/integration, each with its
shared helpers in a `support` package (no tests there)."""
