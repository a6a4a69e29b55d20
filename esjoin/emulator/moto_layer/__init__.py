"""moto in this process: its backends and dispatch, the fixes and speed patches applied to it,
the lock that serialises it, the change notifier, SQS long polls."""
