from tests.conftest import Consortium


def test_deploy_registers_founders(consortium: Consortium) -> None:
    registry = consortium.registry(consortium.banks[0])
    members = registry.members()
    assert [m.bank_code for m in members] == ["BANK-A", "BANK-B", "BANK-C"]
    assert all(m.status.name == "active" for m in members)
    assert registry.required_votes() == 2
