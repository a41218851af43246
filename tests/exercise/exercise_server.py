import sys  # udpbeat test prologue: the port comes from argv, and the bind below uses
PORT = int(sys.argv[1])  # 127.0.0.1 and PORT, not '' and 12000; all else is verbatim.
import random
import time
from socket import *

serverSocket = socket(AF_INET, SOCK_DGRAM)

serverSocket.bind(('127.0.0.1', PORT))

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
