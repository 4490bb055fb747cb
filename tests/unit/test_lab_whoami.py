"""The lab's whoami workload answers each connection with the address the connection came from."""

import asyncio

from tether.lab.workloads import serve_whoami


def test_whoami_answers_with_the_peer_address() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(serve_whoami, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            own = writer.get_extra_info("sockname")
            answer = await asyncio.wait_for(reader.read(), 5)  # then it closes
            writer.close()
        finally:
            server.close()
        assert answer == f"{own[0]} {own[1]}\n".encode()

    asyncio.run(scenario())
