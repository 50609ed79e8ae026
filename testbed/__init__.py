"""Real servers for the tests and benchmarks, on free ports under a temp dir."""

# Argon2 at its cheapest: test sites make hundreds of users; production keeps the standard cost.
TEST_PASSWORD_COST = "cheap"
