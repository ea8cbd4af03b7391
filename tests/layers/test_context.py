import pytest

from layers import AssistantMessage, Block, Context, Layer, LayerOrderError, ToolResult, UserInput, chain_hash

L1 = Block(Layer.L1, "system", "system.md", b"sys\n")
L2 = Block(Layer.L2, "doc", "README.md", b"readme\n")
L3 = UserInput("hi").to_block()


@pytest.mark.parametrize(
    "blocks",
    [[L2, L1], [L3, L1], [L3, L2], [L1, L3, L2], [L1, L2, L3, L1], [L2, L2, L1]],
)
def test_out_of_order_blocks_are_refused(blocks):
    with pytest.raises(LayerOrderError):
        Context(blocks)


def test_append_refuses_going_back_a_layer_and_keeps_the_context_intact():
    context = Context([L1, L2, L3])
    with pytest.raises(LayerOrderError, match="L1 block system:system.md after L3"):
        context.append(L1)
    with pytest.raises(LayerOrderError):
        context.append(L2)
    assert context.blocks == (L1, L2, L3)


def test_any_in_order_sequence_is_accepted():
    Context([L1, L1, L2, L2, L3, L3])
    Context([L2, L3])
    Context([L1, L3])
    Context([])


def test_prefix_l3_and_hashes():
    reply = AssistantMessage("ok").to_block()
    context = Context([L1, L2, L3, reply])
    assert context.prefix == (L1, L2)
    assert context.l3 == (L3, reply)
    assert context.context_id == chain_hash([L1, L2])
    assert context.layer_hashes() == {
        "L1": chain_hash([L1]),
        "L2": chain_hash([L2]),
        "L3": chain_hash([L3, reply]),
    }


def test_l3_does_not_change_the_context_id():
    before = Context([L1, L2]).context_id
    after = Context([L1, L2, L3, ToolResult("run_command", "ok").to_block()]).context_id
    assert before == after
