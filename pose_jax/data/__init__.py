"""Package data: calibration tables read with importlib.resources."""
