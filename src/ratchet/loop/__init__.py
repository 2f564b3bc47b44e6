"""Rounds of generate -> judge -> pair -> train -> evaluate, exchanged through files."""
