"""esjoin's application: five AWS Lambda handlers for an event-sourced join with snapshots.

Deployed as one zip (standard library + boto3 only). Handlers: ``lambdas.command.handler``,
``lambdas.consumer.handler``, ``lambdas.trigger.handler``, ``lambdas.snapshot.handler``,
``lambdas.trim.handler``.

- Pure domain: `events` (wire format, validation), `sequence` (sort keys), `fold` (view state,
  snapshot prefix), `records` (Lambda event shapes), `work_requests` (SQS request messages).
- I/O: `store` (the only DynamoDB code), `queues` (SQS), `clients` (one boto3 client per service),
  `retry` (backoff for batch leftovers).
- Service: `views` (refresh view rows, shared by trigger and snapshot), `runtime` (settings,
  clients, logger and clock of a warm container), `config` (environment), `logs` (JSON lines).
"""
