"""Pure logic, fast: the demo application (lambdas/, infra/) and the esjoin tool without an endpoint."""
