"""The Service Bus layer (the runtime): consumer, worker pool, lock renewal, replies, settlement, breaker, drain.

Threading model (see docs/architecture.md "Runtime"): one receiver-owner thread per receiver owns every SDK
object it uses; worker threads run ``Processor.process`` and hand the outcome back through a command queue.
"""
