"""Tests of the local emulator itself (local/mailfleet_local: the moto patches, the
template deployer, the API Gateway front, the Lambda bridge, the schedule ticker), kept
apart from the tests of the product in unit/, integration/ and e2e/."""
