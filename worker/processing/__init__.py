"""One request in, one outcome out: the processor and the batching of concurrent requests per collection."""
