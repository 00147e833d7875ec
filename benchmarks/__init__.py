"""Benchmarks of the engagement scorer: `python -m benchmarks.run [--smoke] [--out FILE]`.

Everything runs in one invocation against one embedded broker (Tansu) and one embedded
Redis (Valkey), with one synthetic workload; see BENCHMARKS.md for what each figure means.
"""
