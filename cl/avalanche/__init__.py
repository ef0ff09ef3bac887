"""The Avalanche bridge: Avalanche strategies on cl streams, and cl's evaluation in Avalanche."""
