"""Multi-objective (accuracy, #Params) search strategies over osep cell spaces."""
