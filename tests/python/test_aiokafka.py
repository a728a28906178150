"""aiokafka (asyncio client) against a real freshet broker."""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


# send_and_wait to a new topic (auto-created), then an assigned consumer reads it back.
def test_aiokafka_producer_and_assigned_consumer_round_trip(broker):
    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=broker.addr, acks="all", request_timeout_ms=30000)
        await producer.start()
        try:
            metas = [await producer.send_and_wait("aio-topic", f"aio-{i}".encode(), key=b"k")
                     for i in range(20)]
            batch = producer.create_batch()
            for i in range(20, 40):
                batch.append(key=b"k", value=f"aio-{i}".encode(), timestamp=None)
            fut = await producer.send_batch(batch, "aio-topic", partition=metas[0].partition)
            await asyncio.wait_for(fut, 30)
        finally:
            await producer.stop()
        assert [m.offset for m in metas] == list(range(20))

        tp = TopicPartition("aio-topic", metas[0].partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.addr, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    request_timeout_ms=30000)
        await consumer.start()
        try:
            consumer.assign([tp])
            got = []
            while len(got) < 40:
                batches = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 30)
                got.extend(batches.get(tp, []))
        finally:
            await consumer.stop()
        assert [(m.offset, m.key, m.value) for m in got] == [(i, b"k", f"aio-{i}".encode()) for i in range(40)]

    asyncio.run(asyncio.wait_for(run(), 90))
