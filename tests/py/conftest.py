"""Test configuration. Fixtures are split by concern into the fix_*.py plugins."""

pytest_plugins = ["fix_db", "fix_roles", "fix_data", "fix_tables", "fix_weights", "fix_docker"]
