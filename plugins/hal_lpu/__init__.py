"""The lpu target: a Groq TSP-class tensor streaming processor, statically scheduled over a pipeline of chips."""
