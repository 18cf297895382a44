"""samspt.benchmarks: latency and memory records of every stage."""
