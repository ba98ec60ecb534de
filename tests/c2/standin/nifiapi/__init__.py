"""Test stand-in for the NiFi/MiNiFi ``nifiapi`` package (see ../README.md): the subset the ScoreChurn shells use."""
