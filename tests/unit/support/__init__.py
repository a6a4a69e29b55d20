"""What the unit tests share: in-memory AWS fakes and the demo pipeline wired over them."""
