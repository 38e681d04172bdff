"""Studies on real data: the evaluation protocol (crosscheck), the label audit and the speed benchmark."""
