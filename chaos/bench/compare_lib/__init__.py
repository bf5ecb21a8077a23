"""chaos/bench/compare: Chorus beside ejabberd and Prosody, same machine, same
load generator, same scenarios (docs/benchmarks.md, "Side by side")."""
