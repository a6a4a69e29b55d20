"""The moto gaps emulator/moto_fixes.py closes, observed over HTTP as a client of AWS would see them.

DynamoDB Streams: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html
Kinesis resharding: https://docs.aws.amazon.com/streams/latest/dev/kinesis-using-sdk-java-after-resharding.html
"""

from __future__ import annotations

from typing import Any

from tests.emulator.support.endpoint import Endpoint, create_stream, create_table, wait_until

HALF_HASH = 2**127  # splits the 128-bit hash key space in two


def read_to_end(client: Any, iterator: str | None) -> list[dict[str, Any]]:
    """GetRecords from `iterator` until a page comes back empty (Kinesis and DynamoDB Streams alike)."""
    records: list[dict[str, Any]] = []
    while iterator:
        page = client.get_records(ShardIterator=iterator)
        records += page["Records"]
        if not page["Records"]:
            break
        iterator = page.get("NextShardIterator")
    return records


def stream_records(streams: Any, arn: str) -> list[dict[str, Any]]:
    """Every record in a DynamoDB stream, read from TRIM_HORIZON on each shard."""
    return [
        record
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        for record in read_to_end(
            streams,
            streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ],
        )
    ]


def shard_records(kinesis: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    return read_to_end(
        kinesis,
        kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ],
    )


# -- DynamoDB Streams -----------------------------------------------------------------------------------


def test_a_write_that_changes_nothing_emits_no_stream_record(dynamodb: Any, dynamodbstreams: Any) -> None:
    table, arn = create_table(dynamodb, stream_view="NEW_AND_OLD_IMAGES")
    key = {"pk": {"S": "a"}}

    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})  # the same item again
    dynamodb.update_item(
        TableName=table, Key=key, UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"N": "1"}}
    )  # the same value again
    dynamodb.put_item(TableName=table, Item={**key, "v": {"N": "2"}})  # a real change

    records = stream_records(dynamodbstreams, arn)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY"], records
    assert records[1]["dynamodb"]["OldImage"]["v"] == {"N": "1"}
    assert records[1]["dynamodb"]["NewImage"]["v"] == {"N": "2"}


def test_update_item_creating_an_item_emits_exactly_one_insert(dynamodb: Any, dynamodbstreams: Any) -> None:
    table, arn = create_table(dynamodb, stream_view="NEW_AND_OLD_IMAGES")

    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "new"}},
        UpdateExpression="SET v = :v, w = :w",
        ExpressionAttributeValues={":v": {"N": "1"}, ":w": {"S": "x"}},
    )

    records = stream_records(dynamodbstreams, arn)
    assert [r["eventName"] for r in records] == ["INSERT"], records
    change = records[0]["dynamodb"]
    assert change["Keys"] == {"pk": {"S": "new"}}
    assert change["NewImage"] == {"pk": {"S": "new"}, "v": {"N": "1"}, "w": {"S": "x"}}
    assert "OldImage" not in change


def test_stream_records_carry_event_version_1_1_and_the_tables_region(endpoint: Endpoint) -> None:
    region = "eu-west-1"
    dynamodb, streams = endpoint.client("dynamodb", region), endpoint.client("dynamodbstreams", region)
    table, arn = create_table(dynamodb, stream_view="NEW_IMAGE")
    assert arn is not None and arn.startswith(f"arn:aws:dynamodb:{region}:")

    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})

    records = stream_records(streams, arn)
    assert [r["eventName"] for r in records] == ["INSERT", "REMOVE"]
    for record in records:
        assert (record["eventVersion"], record["awsRegion"], record["eventSource"]) == ("1.1", region, "aws:dynamodb")


def test_get_records_does_not_grow_the_servers_iterator_store(
    endpoint: Endpoint, dynamodb: Any, dynamodbstreams: Any
) -> None:
    table, arn = create_table(dynamodb, stream_view="KEYS_ONLY")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    shard_id = dynamodbstreams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    moto = endpoint.emulator.moto

    def stored_iterators() -> int:
        with moto.lock():
            return len(moto.dynamodbstreams("us-east-1").shard_iterators)

    first = dynamodbstreams.get_shard_iterator(StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    first_page = dynamodbstreams.get_records(ShardIterator=first)
    before = stored_iterators()
    iterator = first_page["NextShardIterator"]
    for _ in range(60):  # a poller reading a quiet stream
        iterator = dynamodbstreams.get_records(ShardIterator=iterator)["NextShardIterator"]
    for _ in range(20):
        dynamodbstreams.get_shard_iterator(StreamArn=arn, ShardId=shard_id, ShardIteratorType="LATEST")

    assert stored_iterators() == before <= 1
    # Iterators carry their position: the first one still reads the same record.
    assert dynamodbstreams.get_records(ShardIterator=first)["Records"] == first_page["Records"]


def test_query_on_a_big_table_returns_the_right_pages(dynamodb: Any) -> None:
    table, _ = create_table(dynamodb, range_key=True)
    items = [
        {"pk": {"S": f"user-{p:02d}"}, "sk": {"S": f"event-{s:03d}"}, "n": {"N": str(s)}}
        for p in range(20)
        for s in range(60)
    ]
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        assert not dynamodb.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems")

    def query_pages(**arguments: Any) -> list[list[str]]:
        pages: list[list[str]] = []
        while True:
            page = dynamodb.query(TableName=table, Limit=25, **arguments)
            pages.append([item["sk"]["S"] for item in page["Items"]])
            if "LastEvaluatedKey" not in page:
                return pages
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    forward = query_pages(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "user-17"}})
    expected = [f"event-{s:03d}" for s in range(60)]
    assert [len(page) for page in forward][:2] == [25, 25]
    assert [sk for page in forward for sk in page] == expected

    backward = query_pages(
        KeyConditionExpression="pk = :p", ScanIndexForward=False, ExpressionAttributeValues={":p": {"S": "user-17"}}
    )
    assert [sk for page in backward for sk in page] == expected[::-1]

    ranged = query_pages(
        KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
        ExpressionAttributeValues={":p": {"S": "user-03"}, ":a": {"S": "event-010"}, ":b": {"S": "event-044"}},
    )
    assert [sk for page in ranged for sk in page] == expected[10:45]
    assert (
        dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            Select="COUNT",
            ExpressionAttributeValues={":p": {"S": "user-99"}},
        )["Count"]
        == 0
    )


# -- Kinesis ---------------------------------------------------------------------------------------------


def test_kinesis_sequence_numbers_grow_across_shards(kinesis: Any) -> None:
    stream, _ = create_stream(kinesis, shards=2)
    sequence_numbers, shards = [], []
    for i in range(12):
        hash_key = "0" if i % 2 else str(HALF_HASH + 1)
        put = kinesis.put_record(StreamName=stream, Data=b"%d" % i, PartitionKey=f"k{i}", ExplicitHashKey=hash_key)
        sequence_numbers.append(int(put["SequenceNumber"]))
        shards.append(put["ShardId"])

    assert len(set(shards)) == 2
    assert sequence_numbers == sorted(sequence_numbers) and len(set(sequence_numbers)) == 12
    batch = kinesis.put_records(
        StreamName=stream, Records=[{"Data": b"b", "PartitionKey": f"b{i}"} for i in range(10)]
    )["Records"]
    batch_numbers = [int(record["SequenceNumber"]) for record in batch]
    assert batch_numbers == sorted(batch_numbers) and batch_numbers[0] > sequence_numbers[-1]


def test_after_split_shard_children_sort_after_the_parent_which_keeps_its_records(kinesis: Any) -> None:
    stream, _ = create_stream(kinesis, shards=1)
    parent = kinesis.describe_stream(StreamName=stream)["StreamDescription"]["Shards"][0]["ShardId"]
    before = [
        kinesis.put_record(StreamName=stream, Data=b"before-%d" % i, PartitionKey=f"p{i}")["SequenceNumber"]
        for i in range(3)
    ]

    kinesis.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(HALF_HASH))
    shards = wait_until(
        lambda: (
            (d := kinesis.describe_stream(StreamName=stream)["StreamDescription"])["StreamStatus"] == "ACTIVE"
            and len(d["Shards"]) == 3
            and d["Shards"]
        ),
        "the split to finish",
    )
    children = [s["ShardId"] for s in shards if s.get("ParentShardId") == parent]
    assert len(children) == 2

    after = []
    for i in range(8):
        hash_key = str(i) if i % 2 else str(HALF_HASH + i)
        put = kinesis.put_record(
            StreamName=stream, Data=b"after-%d" % i, PartitionKey=f"q{i}", ExplicitHashKey=hash_key
        )
        assert put["ShardId"] in children, f"a put went to {put['ShardId']}, not an open shard"
        after.append(put)

    parent_records = shard_records(kinesis, stream, parent)
    assert [r["SequenceNumber"] for r in parent_records] == before, "the parent keeps its records, unchanged"
    assert [r["Data"] for r in parent_records] == [b"before-0", b"before-1", b"before-2"]
    for child in children:
        records = shard_records(kinesis, stream, child)
        assert records and all(r["Data"].startswith(b"after-") for r in records), "no parent record copied"
        assert min(int(r["SequenceNumber"]) for r in records) > max(int(n) for n in before)
    assert sorted(r["Data"] for child in children for r in shard_records(kinesis, stream, child)) == sorted(
        b"after-%d" % i for i in range(8)
    )
