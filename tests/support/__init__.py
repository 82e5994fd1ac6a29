"""What the tests share, one module per concern (fixtures live in tests/conftest.py):

- tokens: the test signing key, Clerk-shaped session tokens, a clock the test moves
- jwks: a JWKS endpoint on loopback that counts fetches, rotates and goes down
- app: settings for a test app, `running_app` (the app, its lifespan and a client), `served`
- problems: `assert_problem`, the one check of a problem+json answer
- polling: wait for a condition, never for a guessed time
- roles: removing the application role a test database was given
- processes: free ports, the clean environment, start-and-poll, `quoteapi serve` processes
- pgbouncer: a real PgBouncer in transaction mode
"""
