"""aiokafka (asyncio client) against a real freshet broker."""

import asyncio

import pytest

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


# A subscribed consumer in a group reads what was sent, commits, and reads its commit back.
@pytest.mark.timeout(60)
def test_aiokafka_group_consumer_commits_and_reads_its_commit(make_broker):
    b = make_broker(shards=2)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=b.addr, acks="all")
        await producer.start()
        try:
            meta = await producer.send_and_wait("aio-group-topic", b"hello")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("aio-group-topic", bootstrap_servers=b.addr,
                                    group_id="aio-group", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            m = await asyncio.wait_for(consumer.getone(), 30)
            assert m.value == b"hello"
            await consumer.commit()
            tp = TopicPartition("aio-group-topic", meta.partition)
            assert await consumer.committed(tp) == 1
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(run(), 50))
