"""The end-to-end demo: emulators in process, worker processes, a realistic workload, a report."""
