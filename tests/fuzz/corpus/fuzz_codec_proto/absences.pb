
$70e192a3-b4c5-46de-82ef-0a1b2c3d4e5f6
2025-10-06T07:10:00+02:002025-10-06T07:10:00+02:002025-10-06T08:00:00+02:00" 2025-10-06T16:00:00.000000+02:00*Sjukfrånvaro2:
$9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6dÅsa ÖbergIngen:9
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12Exempelskolan F-9B<
$0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0Björn ÖbergIngen