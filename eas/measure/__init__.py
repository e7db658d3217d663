"""Layer 5, measuring what a model costs: time, FLOPs and memory of one generation (cost), the latency
suite that runs every method side by side (latency), the workloads it times (workload) and randomly
initialised models of true-scale shapes (shapes)."""
