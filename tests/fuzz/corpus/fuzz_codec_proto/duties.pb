
$2b3c4d5e-6f70-4182-93a4-b5c6d7e8f9011
2019-06-01T10:00:00+02:002025-08-01T08:00:00Z:
$7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9Bertil BergIngen"L
*
$3c4d5e6f-7081-4293-a4b5-c6d7e8f90a1b7AMentor
2025-08-18"
2026-06-12"d
6
$4d5e6f70-8192-43a4-b5c6-d7e8f90a1b2dFritids ÄngenElevhälsopersonal
2024-08-19"
2025-06-13*9
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12Exempelskolan F-92Lärare:"Ämneslärare i svenska och slöjdBBEBHdP�Z
2019-08-01b
2027-07-31