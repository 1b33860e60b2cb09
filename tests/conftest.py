"""Fixtures shared by the test modules: the Pub/Sub emulator (started by the tests)."""

pytest_plugins = ["tests.pubsub_emulator"]
