
$81f2a3b4-c5d6-47ef-93f0-1b2c3d4e5f601
2020-01-01T00:00:00+01:002024-01-01T00:00:00ZProjektor Åke"=Bärbar projektor med HDMI, förvaras i förrådet på plan 2*9
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12Exempelskolan F-9