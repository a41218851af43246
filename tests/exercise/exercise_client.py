import sys  # udpbeat test prologue: the port comes from argv, and the address below is
PORT = int(sys.argv[1])  # 127.0.0.1 and PORT, not 'localhost' and 12000; all else verbatim.
import time
import socket

clientSocket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
clientSocket.settimeout(1)  # Set a timeout of 1 second

# Server details
serverAddress = ('127.0.0.1', PORT)

# Tracking consecutive packet losses
consecutive_losses = 0
num_heartbeats = 100        # number of heartbeats to send
max_consecutive_losses = 3  # Assuming the server is down if we miss 3 responses

for sequence_number in range(1, num_heartbeats + 1):
    start_time = time.time() # Starting time; when the heartbeat was sent.

    # format: "Heartbeat <sequence_number> <timestamp>"
    message = f"Heartbeat {sequence_number} {start_time}"

    try:
        # Sending the heartbeat message to the server
        clientSocket.sendto(message.encode(), serverAddress)
        print(f"Sent: {message}")

        # Receiving the server's response
        response, server = clientSocket.recvfrom(1024)

        # If we receive a response, then reset the consecutive_losses counter
        consecutive_losses = 0

        # Server's response
        print(f"Reply from {server}: {response.decode()}")

    except socket.timeout:
        # Increment consecutive losses if a response is not received within 1 second
        consecutive_losses += 1
        print(f"Heartbeat {sequence_number}: Request timed out")

        # If 3 consecutive losses are detected, assume the server has stopped
        if consecutive_losses >= max_consecutive_losses:
            print("Server is assumed to have stopped after 3 consecutive timeouts.")
            break

clientSocket.close()
