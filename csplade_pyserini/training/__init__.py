"""Training building blocks for CSPLADE / Lion-SP: losses, schedules, sequence packing and data readers."""
