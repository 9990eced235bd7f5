# The two commands of the README. Each sets up what it needs (scripts/bootstrap.sh) first.
.PHONY: demo test

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh
