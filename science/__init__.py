"""The science domain: sky map, synthetic release, pipeline steps, workflow of a share, overlap
cross-validation and accuracy against truth. Pure functions of files and arrays: it knows nothing of
sites, databases or transfers."""
