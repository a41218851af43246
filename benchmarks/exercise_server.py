"""The exercise's heartbeat server, verbatim except that host and port come from the command line.

Usage: ``python benchmarks/exercise_server.py HOST PORT`` (the benchmark sends its output to
/dev/null). It drops 4 of every 11 requests on purpose (``randint(0, 10) < 4``), prints two lines
per packet and stops on the first malformed datagram: that is the point of comparison.
"""
# ruff: noqa
# mypy: ignore-errors

import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])

# --- the exercise's code from here on; only the bind address changed ---
import random
import time
from socket import *

serverSocket = socket(AF_INET, SOCK_DGRAM)

serverSocket.bind((HOST, PORT))

print("UDP Heartbeat Server is running...")

while True:
    rand = random.randint(0, 10)

    message, address = serverSocket.recvfrom(1024)
    receive_time = time.time()

    if rand < 4:
        print(f"Simulating packet loss for message from {address}")
        continue

    # Extracting sequence number and timestamp from the message
    message_parts = message.decode().split()
    sequence_number = message_parts[1]
    sent_time = float(message_parts[2])

    # Calculating the latency
    time_difference = receive_time - sent_time

    response_message = f"Seq: {sequence_number}, Time Difference: {time_difference:.6f} seconds"

    # Sending the response back to the client
    serverSocket.sendto(response_message.encode(), address)
    print(f"Responded to {address} with {response_message}")
