"""Keys of the records that the ServerApp and the ClientApp exchange (Flower's kebab-case)."""

# ConfigRecord entries sent with every train and evaluate message.
CONFIG_KEY = "fedsign-config"  # the resolved fedsign config as YAML text
ROUND_KEY = "server-round"
LR_KEY = "lr"
OBJECTIVES_KEY = "objectives"  # comma-separated client objective names, e.g. "prox,sign"

# MetricRecord entries every client reply carries.
NUM_EXAMPLES_KEY = "num-examples"
PARTITION_ID_KEY = "partition-id"
