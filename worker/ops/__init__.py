"""What the operator uses: health, metrics, controls and the reasons a request waits."""
