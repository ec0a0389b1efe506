"""Where changes come in: the seed's HTTP API, the MQTT queue and the operator's admin routes."""
