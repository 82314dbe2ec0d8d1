
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12:
2021-08-02T09:14:11+02:002024-06-20T16:40:03.125+02:00Exempelskolan F-9 Åsa"EXS*	Skolenhet2212000-0142:;
$5a2f9a43-2c1e-4a7f-9b1e-0c7b7d9f1a01Exempelstads kommunB12345678JFKLASSJGRJFTHRI
BesöksadressSkolvägen 1Älvsjö"123 45(0�:
Örby 1:23BSverigeZ0180b%https://exempelskolan.exempelstad.se/jexpedition@exempelskolan.ser+46 8 123 456 78z
Telefon08-123 456 78z)
ÖvrigtExpeditionen är öppen 8–16�
2015-07-01�
2030-06-30