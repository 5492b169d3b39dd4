"""Instructor tooling of the course: nbgrader configuration and the `python -m autograder` CLI."""
