"""Stage 1, on each replica: plan tables into units and stream each unit from the server to the store."""
