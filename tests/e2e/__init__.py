"""End-to-end tests: the local stack, a lost node, the benchmarks and the README's commands as written."""
