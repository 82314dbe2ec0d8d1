
$4d5e6f70-8192-43a4-b5c6-d7e8f90a1b2c8
2025-03-01T09:00:00+01:002025-03-01T09:00:00.5+01:009
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12Förskolan Älgen"8
$5e6f7081-92a3-44b5-86c7-e8f90a1b2c3dAvdelning Ängen*<
$6f708192-a3b4-45c6-97d8-f90a1b2c3d4eÖrjan ÅbergIngen2<
$0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0Märta ÅbergIngen2G
$1f2e3d4c-5b6a-4978-8887-b6c5d4e3f201Pär ÅbergSekretessmarkering:FSB
2025-08-18J
2026-06-30ROmsorgsbehovX(