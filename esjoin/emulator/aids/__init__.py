"""What tests need beyond AWS: fault injection and the invocation history."""
