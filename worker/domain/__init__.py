"""The domain: pure code, no I/O. The error tree, the request/result contract, secrets that never print."""
