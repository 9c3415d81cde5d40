#!/bin/sh
# Prints a greeting and where it runs; GREETING comes from the image's ENV.
echo "${GREETING:-Hello}, $(id -un) on $(uname -s) $(uname -m)!"
